"""Discrete flow matching: mixture paths (mask and uniform sources), losses, CTMC Euler
sampling for tokens, and masked transformer models for text."""
