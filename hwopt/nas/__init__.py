"""Once-for-All-style subnet selection: elastic spaces, supernets, accuracy predictor, evolutionary search."""
