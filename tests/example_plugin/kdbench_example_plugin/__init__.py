"""An example kdbench plugin: an attack and a defense, registered through entry points."""
