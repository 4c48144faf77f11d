"""Comparison methods, one module each, all behind `monkey.methods.Method`."""
