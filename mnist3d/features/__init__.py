"""What the network sees, as preprocess builds it: colour, slab alignment and the cube's symmetries."""
