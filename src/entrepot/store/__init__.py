"""Tables, migrations and repositories of entrepot's own state."""
