"""The deploy file pyinfra runs for the family stack's configuration (see
:mod:`memu_firstboot.deploy`)::

    pyinfra -y @local /usr/lib/python3/dist-packages/memu_firstboot/stack_deploy.py
"""

from memu_firstboot.deploy import deploy

deploy()
