"""MLP builders and the Lightning classifier that trains them."""
