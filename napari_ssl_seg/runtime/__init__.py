"""How the tool runs: child processes and their error lines, the allocator, GC pauses, the plot renderer."""
