"""pytest plugin (entry point ``pytest11``); its fixtures arrive with the plugin work."""
