"""Train a Keras MLP and a scikit-learn MLPClassifier on the same data and compare them."""
