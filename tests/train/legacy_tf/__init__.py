"""The TensorFlow-only SAEHD code as it was before the Keras 3 port: the reference the parity tests compare with."""
