"""A study: python scripts/study.py run|status|report <spec.yaml> (= lightning-marl-study; lightning_marl/study)."""
from lightning_marl.study import main

if __name__ == "__main__":
    main()
