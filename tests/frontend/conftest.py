import sys
from pathlib import Path

# golden.py holds helpers shared by these tests.
sys.path.insert(0, str(Path(__file__).parent))
