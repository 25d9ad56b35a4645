"""Reliability and security suite: malformed inputs, crashes, full disks, pickles, paths, PHI."""
