"""How popvae is run: the CLI, `ray submit` entry, cluster configs and the status service."""
