"""One public function per pipeline stage; Prefect tasks wrap these."""
