"""popvae: population training of Gumbel-Softmax VAEs and robust autoencoders on Ray."""
