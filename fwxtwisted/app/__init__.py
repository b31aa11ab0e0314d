"""The application: configuration, the firewall service, twistd, worker processes, the demo."""
