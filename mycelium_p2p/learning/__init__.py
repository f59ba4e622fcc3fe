"""Local learning: data, models, training and the Flower glue (the only Flower importer)."""
