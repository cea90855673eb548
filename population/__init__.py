"""All training: temperature algorithms, member and coordinator actors, robust-AE jobs, run folders."""
