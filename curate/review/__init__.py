"""curate review: a local web app to see every face of a faceset, filter it and record decisions."""
