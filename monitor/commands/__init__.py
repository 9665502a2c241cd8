"""Sub-commands of ``monitor`` (one module each, registered in ``monitor.cli.COMMAND_MODULES``)."""
