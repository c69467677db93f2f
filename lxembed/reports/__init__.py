"""Reports about built images: what takes the space, what changed between two builds."""
