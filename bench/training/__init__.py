"""How every network trains: recipes, the training loop, its losses and derived seeds."""
