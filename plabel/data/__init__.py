"""Data: image sources (embedded, torchvision, Hugging Face, idx) and what is built on them."""
