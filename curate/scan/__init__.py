"""The scan phase: walk and decode files, run the face models, write rows (local threads or Ray)."""
