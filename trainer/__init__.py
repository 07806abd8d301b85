"""Training jobs: the ECG autoencoder (the product's model) and the tutorial's two
Fashion-MNIST image models. Everything here may import TensorFlow; the worker never
imports this package."""
