"""The napari side: dock widgets and viewer helpers (the only Qt/napari importers besides the contributions)."""
