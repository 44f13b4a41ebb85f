"""Footage around the stream: reading and writing video and images, face crops, tracking, paste-back."""
