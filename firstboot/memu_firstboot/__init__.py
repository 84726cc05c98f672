"""Memu OS first-boot app: the page a family opens to set the box up, and the setup state."""
