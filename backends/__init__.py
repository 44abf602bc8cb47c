"""Built-in plugins, one module per framework; each imports its framework in
``load()``, never at module level."""
