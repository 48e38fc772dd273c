"""ratgan.generation"""
