"""Generic blocks that are not optimizers, one file per theme."""
