"""One file per algorithm family: its state, its block(s), its named optimizer(s)."""
