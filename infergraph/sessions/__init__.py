"""Sorting sessions: detections per picture → arm coordinates → pick/drop commands."""
