"""ratgan.segmentation"""
