"""Stand-in for `modules.progress`: the task ids that A1111's progress bar polls for."""

import time

current_task = None
pending_tasks: dict[str, float] = {}
finished_tasks: list[str] = []


def add_task_to_queue(id_job):
    pending_tasks[id_job] = time.time()


def start_task(id_task):
    global current_task
    current_task = id_task
    pending_tasks.pop(id_task, None)


def finish_task(id_task):
    global current_task
    if current_task == id_task:
        current_task = None
    finished_tasks.append(id_task)
