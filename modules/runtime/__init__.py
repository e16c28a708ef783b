"""The running studio: configuration, device and memory, settings, output files, wiring."""
