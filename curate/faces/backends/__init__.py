"""Face analysis backends behind one interface: images in, DetectedFace records out."""
