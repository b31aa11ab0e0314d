"""The FTP filter and its sans-I/O control-channel parser."""
