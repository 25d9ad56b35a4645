"""Semi-supervised methods: interchangeable strategies behind one interface (see base.py)."""
