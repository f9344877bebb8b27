"""MedFocusLeak: background-confined transfer attack on medical vision-language models."""
