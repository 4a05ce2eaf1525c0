"""A small one-stage detector (centre heatmap + box size) for sorting-table pictures."""
