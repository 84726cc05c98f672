// SPDX-License-Identifier: GPL-2.0
/*
 * memu_tryboot: "systemctl reboot '0 tryboot'" on a mainline kernel on a Raspberry Pi 5.
 *
 * The Pi's firmware boots the [tryboot] partition of autoboot.txt once when the tryboot
 * reboot flag is set before the restart. Raspberry Pi's own kernel sets it from a reboot
 * notifier; mainline kernels ignore the argument. This module does the same through the
 * upstream firmware interface (include/soc/bcm2835/raspberrypi-firmware.h): on a restart
 * whose argument contains "tryboot" it sends the firmware property SET_REBOOT_FLAGS
 * (tag 0x00038064) with bit 0 set. Loaded on a Pi only (its alias is the firmware's device
 * tree node); elsewhere it refuses to load.
 *
 * Not tried on a real Raspberry Pi 5 (see README.md, "Raspberry Pi 5").
 */
#include <linux/module.h>
#include <linux/notifier.h>
#include <linux/of.h>
#include <linux/reboot.h>
#include <linux/string.h>
#include <soc/bcm2835/raspberrypi-firmware.h>

#define MEMU_SET_REBOOT_FLAGS 0x00038064
#define MEMU_REBOOT_FLAG_TRYBOOT 0x1

static struct rpi_firmware *memu_fw;

static int memu_tryboot_notify(struct notifier_block *nb, unsigned long action, void *data)
{
	const char *arg = data;
	u32 flags = MEMU_REBOOT_FLAG_TRYBOOT;
	int ret;

	if (action != SYS_RESTART || !arg || !strstr(arg, "tryboot"))
		return NOTIFY_DONE;
	ret = rpi_firmware_property(memu_fw, MEMU_SET_REBOOT_FLAGS, &flags, sizeof(flags));
	if (ret)
		pr_err("memu_tryboot: the firmware refused the tryboot flag (%d): this restart boots the committed slot\n",
		       ret);
	else
		pr_info("memu_tryboot: the next boot is a trial (tryboot)\n");
	return NOTIFY_DONE;
}

static struct notifier_block memu_tryboot_nb = {
	.notifier_call = memu_tryboot_notify,
	/* before the firmware driver's own notifiers, which may put the firmware to rest */
	.priority = 128,
};

static int __init memu_tryboot_init(void)
{
	struct device_node *np;

	np = of_find_compatible_node(NULL, NULL, "raspberrypi,bcm2835-firmware");
	if (!np)
		return -ENODEV;
	memu_fw = rpi_firmware_get(np);
	of_node_put(np);
	if (!memu_fw)
		return -EAGAIN; /* the firmware driver has not started yet */
	return register_reboot_notifier(&memu_tryboot_nb);
}

static void __exit memu_tryboot_exit(void)
{
	unregister_reboot_notifier(&memu_tryboot_nb);
	rpi_firmware_put(memu_fw);
}

module_init(memu_tryboot_init);
module_exit(memu_tryboot_exit);

MODULE_ALIAS("of:N*T*Craspberrypi,bcm2835-firmware");
MODULE_ALIAS("of:N*T*Craspberrypi,bcm2835-firmwareC*");
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Sets the Raspberry Pi firmware's tryboot flag on reboot \"0 tryboot\"");
