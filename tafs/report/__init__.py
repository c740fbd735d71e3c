"""Tables, figures and image grids."""
