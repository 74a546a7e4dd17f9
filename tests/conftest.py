import os
import sys

# the scripts are top-level modules: make `import model` work from any working directory
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
