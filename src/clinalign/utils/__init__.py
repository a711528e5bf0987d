"""Small shared helpers with no heavy dependencies."""
