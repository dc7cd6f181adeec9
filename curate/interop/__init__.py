"""Other tools' formats: DeepFaceLab aligned folders and .pts landmark files."""
