"""Application filters shipped with fwxtwisted, one package per protocol."""
