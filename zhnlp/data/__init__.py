"""Corpus readers: the official CLUE, Ape210K and LCCC formats, row I/O with the bad-row policy, downloads."""
