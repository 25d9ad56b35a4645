"""Active learning support: how well uncertainty maps point at the network's errors."""
