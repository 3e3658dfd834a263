from api.cli import main

# Guarded: vLLM's engine processes are spawned, and spawn re-imports the parent's main module.
if __name__ == "__main__":
    main()
