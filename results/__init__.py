"""The paper's reported numbers (`paper/`), shipped so a report can set them beside ours."""
