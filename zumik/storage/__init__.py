"""Every name under the data dir and every write to it; raises domain errors only."""
