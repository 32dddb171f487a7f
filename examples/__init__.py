"""Worked examples of extending zaqbench from outside its packages."""
