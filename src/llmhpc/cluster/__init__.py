"""The cluster side: site, preflight, job resources, launchers, PBS commands, profiles. Standard library and
PyYAML only: the PBS console scripts import it on login nodes."""
