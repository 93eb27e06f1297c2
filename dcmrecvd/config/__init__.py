"""What the administrator writes: the INI file, DCMTK association configuration files, UID
names, access rules and TLS material, read into Settings and profiles."""
